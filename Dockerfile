# rqscope image: `rqscope serve` by default; `rqscope worker ...` with another command.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 rqscope
WORKDIR /app

# dependencies first: this layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml README.md ./
RUN mkdir -p rqscope tasks monitor web && touch rqscope/__init__.py tasks/__init__.py monitor/__init__.py web/__init__.py \
    && pip install . && pip uninstall -y rqscope

COPY rqscope ./rqscope
COPY tasks ./tasks
COPY monitor ./monitor
COPY web ./web
RUN pip install --no-deps .

USER rqscope
ENV RQSCOPE_HOST=0.0.0.0 RQSCOPE_PORT=9190
EXPOSE 9190
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9190/healthz', timeout=2)"
ENTRYPOINT ["rqscope"]
CMD ["serve"]
