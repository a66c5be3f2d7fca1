"""Generated protobuf and gRPC code for the tlsfleet.v1 wire contract (`make proto`)."""
