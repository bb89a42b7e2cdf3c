"""Task pipelines: each turns a card + engine run into one user-facing job."""
