// A tour of both services from Node.js with the generated code in clients/ts:
//   1. place a bid (and replay it: the same request_id returns the same bid);
//   2. hit the duplicate bid and an invalid one, printing ErrorInfo and BadRequest
//      decoded from grpc-status-details-bin;
//   3. accept the bid (a task is created);
//   4. submit an execution of the task and watch it to the end;
//   5. create a delivery token and read the delivery.
//
// Run it against `make run` from the repository root, after `npm install`:
//   node examples/node/tour.mjs
// Environment:
//   BIDS_TARGET        BidService address (default 127.0.0.1:50051)
//   EXECUTION_TARGET   ExecutionService address (default 127.0.0.1:50052)
//   MARKETPLACE_TOKEN  a raw bearer token sent to both services as
//                      `authorization: Bearer <token>`. Not needed against `make run`:
//                      on loopback with no tokens configured every caller is the
//                      local-dev admin. Where tokens are configured, use an admin
//                      token accepted by both services (the tour acts as agent,
//                      client and owner in turn): `make env` writes one to .env as
//                      MARKETPLACE_ADMIN_TOKEN, or issue one with
//                      `.venv/bin/python -m marketplace_common.auth new-token --role admin --subject tour`.
//   MARKETPLACE_TLS_CA_FILE  a PEM trust root: connect with TLS (services started with
//                      *_TLS_CERT_FILE / *_TLS_KEY_FILE); plaintext when unset.
//   MARKETPLACE_TLS_CERT_FILE, MARKETPLACE_TLS_KEY_FILE  a client certificate and key
//                      for mutual TLS (services started with *_TLS_CLIENT_CA_FILE).
// docs/clients.md explains the retries, the error details and the other languages.
// Calls that fail with UNAVAILABLE or ABORTED are retried after the server's
// RetryInfo delay with the very same request (same request_id / event_id).
// Exits 0 after the tour, 1 at the first unexpected answer.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";

import { BidService, BidStatusSchema, TaskStatusSchema } from "../../clients/ts/marketplace/bids/v1/bids_pb.js";
import {
  ExecutionService,
  ExecutionStatus,
  ExecutionStatusSchema,
} from "../../clients/ts/marketplace/execution/v1/execution_pb.js";
import { codeName, connect, describeError, enumName, errorDetails, withRetry } from "./marketplace_client.mjs";

const BIDS_TARGET = process.env.BIDS_TARGET || "127.0.0.1:50051";
const EXECUTION_TARGET = process.env.EXECUTION_TARGET || "127.0.0.1:50052";
const TOKEN = process.env.MARKETPLACE_TOKEN || undefined;
const TLS_CA_FILE = process.env.MARKETPLACE_TLS_CA_FILE || undefined;
const TERMINAL = new Set([ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED]);

class TourError extends Error {}

function check(condition, message) {
  if (!condition) throw new TourError(message);
}

/** Runs `call` expecting it to fail with `code`; returns the error. */
async function expectError(code, call) {
  try {
    await call();
  } catch (error) {
    check(error.code === code, `expected ${codeName(code)}, got ${describeError(error)}`);
    return error;
  }
  throw new TourError(`expected ${codeName(code)}, the call succeeded`);
}

function printDetails(error) {
  const { errorInfo, badRequest } = errorDetails(error);
  check(errorInfo !== undefined, `no ErrorInfo in ${describeError(error)}`);
  console.log(`   ${codeName(error.code)}: ${error.details}`);
  console.log(`   ErrorInfo: reason=${errorInfo.reason} domain=${errorInfo.domain} errorType=${errorInfo.metadata.errorType}`);
  for (const violation of badRequest?.fieldViolations ?? []) {
    console.log(`   BadRequest: ${violation.field}: ${violation.description}`);
  }
  return { errorInfo, badRequest };
}

async function placeBid(bids, jobId) {
  // Built once, sent on every attempt: a retry after a lost reply returns the first bid.
  const request = {
    requestId: randomUUID(),
    marketplace: "upwork",
    jobId,
    agentId: "agent-7",
    amount: { currencyCode: "USD", units: 120n, nanos: 500_000_000 },
    proposal: "A haiku about gRPC, delivered today.",
  };
  const { bid } = await withRetry("PlaceBid", () => bids.unary("placeBid", request));
  console.log(`1. PlaceBid: bid ${bid.bidId} ${enumName(BidStatusSchema, bid.status)} (request_id ${request.requestId})`);
  const replay = await withRetry("PlaceBid", () => bids.unary("placeBid", request));
  check(replay.bid.bidId === bid.bidId, `the replay returned another bid: ${replay.bid.bidId}`);
  console.log(`   replay of request_id ${request.requestId}: the same bid ${replay.bid.bidId}`);
  return bid;
}

async function hitErrors(bids, jobId) {
  const duplicate = await expectError(grpc.status.ALREADY_EXISTS, () =>
    bids.unary("placeBid", {
      requestId: randomUUID(),
      marketplace: "upwork",
      jobId,
      agentId: "agent-7",
      amount: { currencyCode: "USD", units: 99n },
      proposal: "Cheaper!",
    }),
  );
  console.log("2. PlaceBid again on the same job:");
  const { errorInfo } = printDetails(duplicate);
  check(errorInfo.reason === "BID_ALREADY_ACTIVE", `reason ${errorInfo.reason}`);

  const invalid = await expectError(grpc.status.INVALID_ARGUMENT, () =>
    bids.unary("placeBid", {
      requestId: "not-a-uuid",
      marketplace: "upwork",
      jobId: `${jobId}-b`,
      agentId: "agent-7",
      amount: { currencyCode: "usd", units: -5n, nanos: 500_000_000 },
      proposal: "cheap",
    }),
  );
  console.log("   PlaceBid with bad fields:");
  const { badRequest } = printDetails(invalid);
  const fields = (badRequest?.fieldViolations ?? []).map((v) => v.field);
  check(fields.includes("request_id") && fields.includes("amount.currency_code"), `BadRequest fields ${fields}`);
}

async function acceptBid(bids, bid) {
  const request = {
    bidId: bid.bidId,
    eventId: randomUUID(),
    clientEmail: "alice@example.com",
    title: "Write a haiku",
    description: "About gRPC",
  };
  const accepted = await withRetry("AcceptBid", () => bids.unary("acceptBid", request));
  const { task } = accepted;
  console.log(
    `3. AcceptBid: bid ${enumName(BidStatusSchema, accepted.bid.status)}, task ${task.taskId} ` +
      `${enumName(TaskStatusSchema, task.status)} (event_id ${request.eventId})`,
  );
  return task;
}

async function watchToTheEnd(execution, executionId) {
  // A watch that breaks (UNAVAILABLE when a replica stops) is opened again: it
  // starts with the current state, so nothing is missed.
  return withRetry("WatchExecution", async () => {
    let last;
    for await (const { event } of execution.stream("watchExecution", { executionId })) {
      last = event.execution;
      if (event.kind.case === "statusChange") {
        console.log(`   watch: ${enumName(ExecutionStatusSchema, event.kind.value.newStatus)}`);
      } else if (event.kind.case === "attempt") {
        const attempt = event.kind.value;
        console.log(`   watch: attempt ${attempt.number} ${attempt.code || "ok"}`);
      }
    }
    check(last && TERMINAL.has(last.status), "the watch ended before a terminal state");
    return last;
  });
}

async function runExecution(execution, task) {
  const request = { requestId: randomUUID(), taskId: task.taskId };
  const submitted = await withRetry("SubmitExecution", () => execution.unary("submitExecution", request));
  const executionId = submitted.execution.executionId;
  console.log(
    `4. SubmitExecution: execution ${executionId} ${enumName(ExecutionStatusSchema, submitted.execution.status)} ` +
      `(request_id ${request.requestId})`,
  );
  const finished = await watchToTheEnd(execution, executionId);
  console.log(`   execution ${enumName(ExecutionStatusSchema, finished.status)}: ${JSON.stringify(finished.result)}`);
  check(finished.status === ExecutionStatus.SUCCEEDED, `execution ended ${finished.errorMessage}`);
  return finished;
}

async function deliver(bids, task, finished) {
  // Not idempotent (every call issues a new token), so not retried blindly.
  const issued = await bids.unary("createDeliveryToken", { taskId: task.taskId, ttl: { seconds: 3600n } });
  console.log(`5. CreateDeliveryToken: a token of ${issued.token.length} characters, expires ${timestampDate(issued.expiresAt).toISOString()}`);
  const { delivery } = await withRetry("GetDelivery", () => bids.unary("getDelivery", { token: issued.token }));
  console.log(`   GetDelivery: task ${delivery.taskId} for ${delivery.clientEmail}: ${JSON.stringify(delivery.result)}`);
  check(delivery.result === finished.result, "the delivery's result is not the execution's");
}

/** TLS credentials from the MARKETPLACE_TLS_* files, or undefined for plaintext. */
function credentials() {
  if (!TLS_CA_FILE) return undefined;
  const read = (name) => (process.env[name] ? readFileSync(process.env[name]) : null);
  return grpc.credentials.createSsl(
    readFileSync(TLS_CA_FILE),
    read("MARKETPLACE_TLS_KEY_FILE"),
    read("MARKETPLACE_TLS_CERT_FILE"),
  );
}

async function main() {
  const who = TOKEN ? "with the bearer token from MARKETPLACE_TOKEN" : "without a token";
  const how = TLS_CA_FILE ? "TLS" : "plaintext";
  console.log(`tour: bids at ${BIDS_TARGET}, execution at ${EXECUTION_TARGET}, ${how}, ${who}`);
  const options = { token: TOKEN, credentials: credentials() };
  const bids = connect(BidService, BIDS_TARGET, options);
  const execution = connect(ExecutionService, EXECUTION_TARGET, options);
  try {
    const jobId = `job-${randomUUID().slice(0, 8)}`;
    const bid = await placeBid(bids, jobId);
    await hitErrors(bids, jobId);
    const task = await acceptBid(bids, bid);
    const finished = await runExecution(execution, task);
    await deliver(bids, task, finished);
    console.log("tour: OK");
  } finally {
    bids.close();
    execution.close();
  }
}

main().catch((error) => {
  console.error(`tour: FAILED: ${error instanceof TourError ? error.message : describeError(error)}`);
  if (!(error instanceof TourError) && error.code === undefined) console.error(error);
  process.exitCode = 1;
});
