"""facegate's library: pure, typed building blocks with no Prefect imports."""
