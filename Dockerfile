# The agentwatch runtime: `agentwatch serve` on 0.0.0.0:8080 inside the container.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY telemetry ./telemetry
RUN pip install --no-cache-dir . && useradd --create-home agentwatch
USER agentwatch
ENV AGENTWATCH_HOST=0.0.0.0 AGENTWATCH_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["agentwatch", "serve"]
