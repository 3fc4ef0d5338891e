"""Everything that makes a model and judges it: data sets (MVTec layout, ELPV) and study protocols, fitting
PatchCore and SoftPatch (coreset sampler, outlier filter, threshold), evaluation, metrics and the report."""
