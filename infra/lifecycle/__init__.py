"""The model lifecycle: register an artifact as a version in the SageMaker Model Registry, approve or reject
it, deploy an approved version to its endpoint (blue/green) and roll back. The same calls run against AWS and
against the local stack's moto."""
