"""Reader for the GoEmotions TSV splits (text, comma-separated label ids, comment id); no pandas needed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from jeffrey_core.contract import EKMAN_LABELS
from jeffrey_worker.emotion.model import EKMAN_GROUPS


@dataclass
class Split:
    texts: list[str]
    fine: npt.NDArray[np.int8]  # (n, 28) multi-hot
    ekman: npt.NDArray[np.int8]  # (n, 7) multi-hot


class GoEmotions:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fine_labels = (folder / "emotions.txt").read_text(encoding="utf-8").split("\n")
        mapping = json.loads((folder / "ekman_mapping.json").read_text(encoding="utf-8"))
        mapping["neutral"] = ["neutral"]
        assert {k: set(v) for k, v in mapping.items()} == {k: set(v) for k, v in EKMAN_GROUPS.items()}
        self.ekman_labels = list(EKMAN_LABELS)

    @cached_property
    def fine_to_ekman(self) -> npt.NDArray[np.int8]:
        matrix = np.zeros((len(self.fine_labels), len(self.ekman_labels)), dtype=np.int8)
        for k, group in enumerate(self.ekman_labels):
            for fine in EKMAN_GROUPS[group]:
                matrix[self.fine_labels.index(fine), k] = 1
        return matrix

    def split(self, name: str) -> Split:
        texts: list[str] = []
        rows: list[list[int]] = []
        # Split on tabs only: some texts hold CSV-style doubled quotes that a CSV reader would mangle.
        for line in (self.folder / f"{name}.tsv").read_text(encoding="utf-8").splitlines():
            text, label_ids, _ = line.split("\t")
            texts.append(text)
            rows.append([int(i) for i in label_ids.split(",")])
        fine = np.zeros((len(texts), len(self.fine_labels)), dtype=np.int8)
        for i, row in enumerate(rows):
            fine[i, row] = 1
        ekman = ((fine @ self.fine_to_ekman) > 0).astype(np.int8)
        return Split(texts, fine, ekman)
