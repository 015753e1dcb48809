"""gRPC transport (grpclib): thin servicers for Fleet, ServerAppIo and Exec."""
