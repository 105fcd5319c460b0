"""The run, from connections and a replication to a summary.

The only package that imports both the readers and the targets:

    run.py       run_replication: streams side by side, one shared client, the summary
    loader.py    one stream's rows from its reader: batches to its writer, checkpoints
    connect.py   the source, the target, state stores, the client, the preflight
    plan.py      what a run would do (`run --dry-run`), as each stream's reader says
    results.py   StreamResult and RunSummary
"""

from sentry_extract.pipeline.connect import (
    build_client as build_client,
)
from sentry_extract.pipeline.connect import (
    maintain_tables as maintain_tables,
)
from sentry_extract.pipeline.connect import (
    open_target as open_target,
)
from sentry_extract.pipeline.connect import (
    state_stores as state_stores,
)
from sentry_extract.pipeline.connect import (
    test_connection as test_connection,
)
from sentry_extract.pipeline.plan import StreamPlan as StreamPlan
from sentry_extract.pipeline.plan import plan_replication as plan_replication
from sentry_extract.pipeline.results import RunSummary as RunSummary
from sentry_extract.pipeline.results import StreamResult as StreamResult
from sentry_extract.pipeline.run import RunSettings as RunSettings
from sentry_extract.pipeline.run import run_replication as run_replication
