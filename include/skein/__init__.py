"""Skein: dataset migrations run as campaigns.

The engine is plain Python and never imports Airflow: ``dags/`` and ``plugins/``
wire it into Airflow, ``skein.cli`` drives it from a shell.
"""

__version__ = "0.1.0"
