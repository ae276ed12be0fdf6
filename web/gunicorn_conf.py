"""gunicorn settings for running the sidecar directly, configured by the same RQSCOPE_* variables as
`rqscope serve`: `gunicorn -c python:rqscope.web.gunicorn_conf 'rqscope.web:create_app()'`.

The app factory starts nothing; this file's worker hook starts each worker's publisher and alert
scheduler. Without it, plain gunicorn serves the dashboard and the APIs but evaluates no alerts.
"""

import os

from rqscope.monitor.settings import from_env
from rqscope.web.serve import gunicorn_options

globals().update(gunicorn_options(from_env(os.environ)))
