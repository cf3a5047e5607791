"""Generated from proto/sts/v1 by scripts/generate-python.sh (grpcio-tools). Do not edit."""
