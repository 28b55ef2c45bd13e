"""Run the ingest_hrss DAG once with dag.test(), as `hub run` does, dropping its file late or never.

Used by tests/e2e/test_drop_wait.py as a script (Airflow is configured once per process):

    python drop_wait_driver.py CONFIG VAR AS_OF late|never

`late` drops the file (data, then its .ok marker) two seconds after the wait's first look found none,
so the wait is known to have waited; prints the task states as `STATES {json}` at the end.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import date, datetime
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from core.settings import load_settings
from hub.airflow_env import DAGS_FOLDER, configure, ensure_metadata_db

HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间\r\n"


class _FirstLook(logging.Handler):
    """Sets `waited` when the wait logs that no file is ready yet."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "no ready file" in record.getMessage():
            self.waited.set()


def main(config: str, var: str, as_of: str, when: str) -> None:
    settings = load_settings(Path(config), var_dir=Path(var))
    ensure_metadata_db(configure(settings, verbose=True))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    drop = Path(settings.expand(settings.sources["hrss"].path))  # type: ignore[union-attr]
    drop.mkdir(parents=True, exist_ok=True)
    look = _FirstLook()
    logging.getLogger("stages.ingest").addHandler(look)

    def late() -> None:
        assert look.waited.wait(120), "the wait never looked"
        time.sleep(2)
        data = drop / f"hrss_persons_{as_of.replace('-', '')}.csv"
        data.write_bytes(HEADER.encode("gb18030"))
        data.with_name(data.name + ".ok").write_bytes(b"")
        print("DROPPED", data, flush=True)

    if when == "late":
        threading.Thread(target=late, daemon=True).start()
    logical = datetime.combine(date.fromisoformat(as_of), clock(), tzinfo=ZoneInfo("Asia/Shanghai"))
    run = bag.get_dag("ingest_hrss").test(logical_date=logical)
    print("STATES", json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
