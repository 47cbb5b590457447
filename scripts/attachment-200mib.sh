#!/bin/sh
# The issue #14 acceptance case for attachments at full size: a 200 MiB
# file uploaded through a proxy that cuts the connection after 120 MiB,
# resumed from the server's committed offset, downloaded, checked (hash,
# then AES-128-GCM) and compared byte for byte. It needs about 1.5 GB of
# memory and 0.5 GB of disk, so it is not part of the default test run
# (crates/testkit/tests/attachments.rs runs the same steps with a few MiB).
set -eu
cd "$(dirname "$0")/.."
exec cargo test --workspace --test attachments -- --ignored --nocapture \
    a_200_mib_attachment_survives_a_cut_connection
