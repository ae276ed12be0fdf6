"""gunicorn settings for running the sidecar directly:
`gunicorn -c python:rqscope.web.gunicorn_conf 'rqscope.web:create_app()'`.

The app factory starts nothing; this hook starts each worker's publisher and alert scheduler.
"""

from rqscope.web.serve import post_worker_init

worker_class = "gthread"
threads = 4

__all__ = ["post_worker_init", "threads", "worker_class"]
