"""Airflow's site hook: imported by every Airflow process at start (the plugins folder is on
``sys.path``). Skein uses it for one thing: the scheduler (LocalExecutor) and Celery workers
preload the engine, so their task runners start with it imported (``skein_airflow.preload``).
"""

from skein_airflow.preload import preload_for_task_runners

preload_for_task_runners()
