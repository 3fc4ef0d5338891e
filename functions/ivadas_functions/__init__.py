"""The IVADAS Lambda functions: handlers (worker, predict, results) and the AWS plumbing they share."""
