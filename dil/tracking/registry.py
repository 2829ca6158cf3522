"""The campaign's registered segmenter in MLflow: versions, aliases, weights (a mixin of the Tracker)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dil.tracking._common import (
    _ARTIFACT_DIR,
    _WEIGHTS_FILE,
    ModelVersionInfo,
    _check_case,
    _check_count,
    _check_key,
    _with_alias,
)

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient


class _Registry:
    """Registry methods of :class:`dil.tracking.Tracker` (``client``, ``campaign``, ``model_name`` are its)."""

    client: MlflowClient
    campaign: str
    model_name: str

    def scan_run_id(self, case_id: str) -> str:  # provided by Tracker
        raise NotImplementedError

    @property
    def tracking_uri(self) -> str:
        return str(self.client.tracking_uri)

    @staticmethod
    def _state_dict(model: Any) -> dict[str, torch.Tensor]:
        import torch

        if isinstance(model, torch.nn.Module):
            state: Any = model.state_dict()
        elif isinstance(model, str | os.PathLike):
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"model: no weights file at {path}")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for a file that is not a checkpoint
                raise ValueError(f"model: {path} is not a torch state dict or trainer checkpoint ({err})") from err
        else:
            state = model
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]  # a trainer checkpoint (dil_core.training.Trainer.state_dict)
        if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
            raise ValueError(
                "model: expected a torch.nn.Module, a state dict of tensors, or a path to one (or to a trainer "
                f"checkpoint), got {type(model).__name__}"
            )
        return {str(k): v.detach().cpu() for k, v in state.items()}

    def register_segmenter(
        self,
        model: Any,
        *,
        case_id: str | None,
        rounds: int | None,
        scans_seen: int,
        kind: str = "scan",
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        state: str | None = None,
    ) -> int:
        """Register a segmenter version: the weights as an artifact of a run, a model version tagged with them.

        A scan's version is logged in the scan's run and ends it (:meth:`end_scan`); registering the same
        scan again (a round processed twice after a crash) returns the existing version.

        Parameters
        ----------
        model : torch.nn.Module, state dict, or path
            The segmenter, its ``state_dict()``, or a file holding either (a trainer checkpoint works: its
            ``model`` entry is taken). Only the weights are stored (no optimiser, no replay buffer).
        case_id : str or None
            The scan this version finished (None for a retraining).
        rounds : int or None
            Rounds that scan took.
        scans_seen : int
            Scans the segmenter has been trained on so far.
        kind : {"scan", "retrain", "continual"}
            What produced it.
        run_id : str, optional
            Run to log the weights in (default: the scan's run; required for ``kind="retrain"``).
        tags : mapping, optional
            More version tags (e.g. ``segmenter``, ``channels`` to rebuild the network, ``val_dice``).
        state : str, optional
            The scan's final state, tagged on its run.

        Returns
        -------
        int
            The model version number. ``models:/dil-<campaign>-segmenter@latest`` resolves to the newest.

        Raises
        ------
        ValueError
            Bad weights, counts or kind; a retraining without ``run_id``.
        FileNotFoundError
            ``model`` names a missing file.
        """
        if kind not in ("scan", "retrain", "continual"):
            raise ValueError(f"kind: must be 'scan', 'retrain' or 'continual', got {kind!r}")
        seen = _check_count(scans_seen, "scans_seen", 0)
        n_rounds = None if rounds is None else _check_count(rounds, "rounds", 0)
        if kind == "scan":
            if case_id is None:
                raise ValueError("case_id: a scan's version needs the scan's case id")
            case_id = _check_case(case_id)
        elif run_id is None:
            raise ValueError("run_id: a retraining's version is logged in the retraining's run; pass its id")
        weights = self._state_dict(model)
        if kind == "scan":
            existing = [
                mv for mv in self.client.search_model_versions(f"name = '{self.model_name}'")
                if (mv.tags or {}).get("kind") == "scan" and (mv.tags or {}).get("scan") == case_id
            ]
            if existing:
                return max(int(mv.version) for mv in existing)
            run_id = run_id or self.scan_run_id(case_id)  # type: ignore[arg-type]
        version_tags = {"campaign": self.campaign, "kind": kind, "scans_seen": str(seen)}
        if case_id is not None:
            version_tags["scan"] = case_id
        if n_rounds is not None:
            version_tags["rounds"] = str(n_rounds)
        for key, value in (tags or {}).items():
            version_tags[_check_key(key, "tags")] = str(value)

        import torch

        with tempfile.TemporaryDirectory(prefix="dil-weights-") as tmp:
            path = Path(tmp) / _WEIGHTS_FILE
            torch.save(weights, path)
            self.client.log_artifact(run_id, str(path), artifact_path=_ARTIFACT_DIR)  # type: ignore[arg-type]
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{_ARTIFACT_DIR}"  # type: ignore[arg-type]
        mv = self.client.create_model_version(
            self.model_name, source=source, run_id=run_id, tags=version_tags,
            description=f"{kind}: {case_id or 'retraining'}; scans seen {seen}",
        )
        if kind == "scan":
            if state is not None:
                self.client.set_tag(run_id, "state", str(state))  # type: ignore[arg-type]
            self.client.set_terminated(run_id, "FINISHED")  # type: ignore[arg-type]
        return int(mv.version)

    def model_uri(self, version: int) -> str:
        """``models:/dil-<campaign>-segmenter/<version>``."""
        return f"models:/{self.model_name}/{_check_count(version, 'version', 1)}"

    def set_alias(self, alias: str, version: int) -> None:
        """Point ``alias`` (e.g. ``champion``) at ``version``; ``latest`` is MLflow's own and cannot be set."""
        self.client.set_registered_model_alias(self.model_name, alias, str(_check_count(version, "version", 1)))

    def alias_version(self, alias: str) -> int | None:
        """The version ``alias`` points at (``latest``: the newest), or None if none."""
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def load_state(self, *, version: int | None = None, alias: str | None = None) -> dict[str, torch.Tensor]:
        """The weights of a version (by number or alias), for ``model.load_state_dict``.

        Raises
        ------
        LookupError
            No such version or alias.
        ValueError
            Both or neither of ``version`` and ``alias`` given.
        """
        if (version is None) == (alias is None):
            raise ValueError("version, alias: give exactly one")
        number = version if version is not None else self.alias_version(alias)  # type: ignore[arg-type]
        if number is None:
            raise LookupError(f"registered model {self.model_name!r} has no alias {alias!r}")
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, str(_check_count(number, "version", 1)))
        except MlflowException as err:
            raise LookupError(f"registered model {self.model_name!r} has no version {number}") from err
        import mlflow.artifacts
        import torch

        with tempfile.TemporaryDirectory(prefix="dil-weights-") as tmp:
            folder = mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return torch.load(Path(folder) / _WEIGHTS_FILE, map_location="cpu", weights_only=True)

    def load_model(
        self, version: int, *, segmenter: str = "unet", channels: Sequence[int] | None = None
    ) -> torch.nn.Module:
        """A version's segmenter with its weights, built as its tags say (``segmenter``, ``channels``).

        ``segmenter`` and ``channels`` are used where the version has no such tags.

        Raises
        ------
        LookupError
            No such version.
        """
        from dil_core.models import build_segmenter

        tags = next((v.tags for v in self.versions() if v.version == version), None)
        if tags is None:
            raise LookupError(f"registered model {self.model_name!r} has no version {version}")
        widths = [int(c) for c in tags["channels"].split(",")] if tags.get("channels") else channels
        model = build_segmenter(tags.get("segmenter", segmenter), channels=widths, seed=0)
        model.load_state_dict(self.load_state(version=version))
        return model

    def versions(self) -> list[ModelVersionInfo]:
        """Every registered version of the campaign's segmenter, oldest first, with its aliases."""
        from mlflow.exceptions import MlflowException

        try:
            aliases = dict(self.client.get_registered_model(self.model_name).aliases or {})
        except MlflowException:
            return []
        by_version: dict[int, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(int(version), []).append(alias)
        out = []
        for mv in self.client.search_model_versions(f"name = '{self.model_name}'"):
            tags = dict(mv.tags or {})
            v = int(mv.version)

            def _int(key: str) -> int | None:
                return int(tags[key]) if tags.get(key, "").isdigit() else None

            try:
                val = float(tags["val_dice"]) if "val_dice" in tags else None
            except ValueError:
                val = None
            out.append(
                ModelVersionInfo(
                    version=v,
                    kind=tags.get("kind", "scan"),
                    scan=tags.get("scan"),
                    rounds=_int("rounds"),
                    scans_seen=_int("scans_seen"),
                    created_ms=int(mv.creation_timestamp or 0),
                    aliases=tuple(sorted(by_version.get(v, []))),
                    val_dice=val,
                    source=str(mv.source),
                    tags=tags,
                )
            )
        if out:
            newest = max(out, key=lambda m: m.version)
            out = [m if m is not newest else _with_alias(m, "latest") for m in out]
        return sorted(out, key=lambda m: m.version)
