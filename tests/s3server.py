"""The S3 server of the scale path's tests (moto on loopback): see `unipgen.bench.scale_services`."""

from unipgen.bench.scale_services import S3Server, aws_environment, s3_server

__all__ = ["S3Server", "aws_environment", "s3_server"]
