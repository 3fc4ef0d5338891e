"""What every part of IVADAS agrees on, in one dependency-free package (the standard library only).

The Lambda functions (`functions/` is their package root), the model server's container image and the local
stack all import it, so a limit, a model name, a key layout or the results table's schema is written once:

- `limits`: request, image byte and pixel limits;
- `models`: the model families and how their endpoints are named in the environment;
- `images`: the file suffixes listed as images in folders;
- `inspection`: inspection ids, the inbox key layout, result object keys and the result records;
- `results_table`: the DynamoDB results table (keys, indexes) and its value conversions.

Tests hold `template.yaml` and the CLI to these values.
"""
