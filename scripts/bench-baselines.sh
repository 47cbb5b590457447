#!/usr/bin/env bash
# Installs the baseline brokers that `sotto-bench --all` measures next to
# Sotto, from Debian's packages: Mosquitto (MQTT QoS 1) and nats-server
# (JetStream). The bench starts its own instances on loopback with its own
# config files; the packaged system services are stopped so they hold no port.
# Safe to run twice. Needs root (apt-get).
set -euo pipefail

pkgs=(mosquitto nats-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  for p in "${missing[@]}"; do
    apt-cache policy "$p" | sed -n '1,3p'
  done
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The packages start system services on their default ports; the bench runs
# its own instances, so stop those (no error if there is no init system).
for svc in mosquitto nats-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
  if command -v service >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
echo "mosquitto: $(mosquitto -h 2>&1 | head -1 || true)"
echo "nats-server: $(nats-server --version 2>&1 || true)"
