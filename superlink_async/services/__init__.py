"""Services: the SuperLink's behaviour, free of any transport.

Each service takes request messages and returns response messages; gRPC, REST and the
GrpcAdapter only convert and delegate, so the behaviour is written (and tested) once.
"""
