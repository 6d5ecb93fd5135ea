"""The restore drill: the cloud's database replaced by an older copy mid-run; after
reconciliation every record is stored exactly once (real processes, real cloud)."""

from __future__ import annotations

from edgebuf.lab.restore import RestoreConfig, run_restore_drill


def test_a_cloud_restored_from_backup_ends_with_every_record_exactly_once(tmp_path):
    result = run_restore_drill(
        RestoreConfig(duration=10.0, fps=30.0, backup_at=2.5, restore_at=6.0, out_dir=tmp_path)
    )
    assert result.lost_by_restore > 0, result  # the restore really took records out
    assert result.ok, result
    assert result.stored == result.logged and result.duplicated == 0 and result.final_missing == 0
    assert (tmp_path / "restore_gaps.png").exists()
