"""The benchmarks: each one a module run as ``python -m benchmarks.<name>``, plus their kit and report.

Every figure a bench reports is a ratio against a baseline measured in the same run (these machines
are shared and noisy). A bench imports only its kit (``benchmarks.kit``) and the project's packages,
never another bench; nothing outside this folder imports a bench.
"""
