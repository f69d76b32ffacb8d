"""gRPC front door: TF Serving's PredictionService and ModelService on grpc.aio."""
