"""`make deploy` (`ivadas deploy-stack`): one stage of IVADAS on an AWS account (docs/deploying.md)."""
