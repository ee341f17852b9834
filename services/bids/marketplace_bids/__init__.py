"""The bids service: tasks, bids, audit events and deliveries."""
