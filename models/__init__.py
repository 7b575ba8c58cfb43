"""Use cases: one module per use case, each exposing ``SPEC`` (a ``tasks.spec.UseCaseSpec``).

The platform finds them by module name (:mod:`tasks.spec.catalog`), so adding a use case
means adding a module here and a three-line DAG file in ``dags/``; nothing else changes.
"""
