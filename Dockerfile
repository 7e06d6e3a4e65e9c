# Convergence from this checkout: docker build -t convergence .   (docs/deploy.md)
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY core core
COPY plugins plugins
COPY migrations migrations
RUN python -m venv /opt/convergence \
 && /opt/convergence/bin/pip install --no-cache-dir '.[postgres]'

FROM python:3.11-slim-bookworm
RUN useradd --system --home-dir /var/lib/convergence --create-home --shell /usr/sbin/nologin convergence \
 && install -d -m 0755 /etc/convergence \
 && printf '%s\n' '[server]' 'data_dir = "/var/lib/convergence"' '' '[http]' 'listen = "0.0.0.0:8080"' \
      > /etc/convergence/convergence.toml
COPY --from=build /opt/convergence /opt/convergence
ENV PATH=/opt/convergence/bin:$PATH \
    CONVERGENCE_CONFIG=/etc/convergence/convergence.toml \
    CONVERGENCE_HEALTH_URL=http://127.0.0.1:8080/health/ready \
    PYTHONUNBUFFERED=1
USER convergence
WORKDIR /var/lib/convergence
VOLUME ["/var/lib/convergence"]
# XMPP (STARTTLS, Direct TLS), SIP (UDP and TCP, TLS), HTTP
EXPOSE 5222 5223 5269 5060/udp 5060 5061 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['CONVERGENCE_HEALTH_URL'], timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["convergence", "serve"]
