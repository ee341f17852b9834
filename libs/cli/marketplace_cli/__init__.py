"""marketctl: the command-line client of the bids and execution services."""
