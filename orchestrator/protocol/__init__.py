"""What TF Serving's client and server sides share: the method table, tensor conversion, the wire
codec, status codes and the labels-mode file schema. Client and server both import this package;
neither imports the other. It imports only orchestrator.protos and orchestrator.errors."""
