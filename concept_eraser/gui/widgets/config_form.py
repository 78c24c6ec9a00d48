"""ConfigFormWidget: a settings form generated from a method's pydantic JSON schema.

One explicit table maps schema types to editors: integer -> QSpinBox, number -> ScientificSpinBox,
boolean -> QCheckBox, enum/Literal -> QComboBox, array -> QPlainTextEdit (one item a line), anything else ->
QLineEdit. minimum/maximum (and the
exclusive variants) become the editor's limits, `description` its tooltip, and fields marked
`advanced: true` go into a collapsible Advanced section. An optional field (pydantic `X | None`: anyOf with a
null branch) means None = automatic (the method decides): an enum gets a first item "automatic"; other types
get the editor of X plus an "auto" check box, and the disabled editor reads "automatic".
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


class ScientificSpinBox(QDoubleSpinBox):
    """A double spin box that shows and accepts 1e-05 style values (learning rates)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        try:
            value = float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        inside = self.minimum() <= value <= self.maximum()  # out of range is not taken (nor silently clamped)
        return (QValidator.State.Acceptable if inside else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - multiplicative steps suit log-scale values
        v = self.value()
        if v > 0 and (v < 0.01 or self.minimum() > 0):
            self.setValue(v * (2.0 ** steps))
        else:
            super().stepBy(steps)


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        name = prop["$ref"].split("/")[-1]
        return {**schema.get("$defs", {}).get(name, {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    if "allOf" in prop and len(prop["allOf"]) == 1:
        return {**_resolve(schema, prop["allOf"][0]), **{k: v for k, v in prop.items() if k != "allOf"}}
    return prop


def _nullable(schema: dict[str, Any], prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`X | None` (anyOf [X, null]) -> (X's schema with the outer title/default/description, True)."""
    branches = prop.get("anyOf")
    if not branches or not any(b.get("type") == "null" for b in branches):
        return prop, False
    rest = [b for b in branches if b.get("type") != "null"]
    if len(rest) != 1:
        return prop, False
    return {**_resolve(schema, rest[0]), **{k: v for k, v in prop.items() if k != "anyOf"}}, True


def _limits(prop: dict[str, Any], integer: bool) -> tuple[float, float]:
    eps = 1 if integer else 0.0
    lo = prop.get("minimum", prop["exclusiveMinimum"] + eps if "exclusiveMinimum" in prop else None)
    hi = prop.get("maximum", prop["exclusiveMaximum"] - eps if "exclusiveMaximum" in prop else None)
    if integer:
        return (int(lo) if lo is not None else -(2**31 - 1), int(hi) if hi is not None else 2**31 - 1)
    if lo is not None and "exclusiveMinimum" in prop and lo == prop["exclusiveMinimum"]:
        lo = lo + (1e-12 if lo == 0 else abs(lo) * 1e-9)
    return (float(lo) if lo is not None else -1e12, float(hi) if hi is not None else 1e12)


class ConfigFormWidget(QWidget):
    """Editors for every property of `schema`; `values()` returns the edited config as a dict."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editors: dict[str, QWidget] = {}
        self.auto_checks: dict[str, QCheckBox] = {}  # optional fields: checked = None (automatic)
        self._types: dict[str, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.basic = QFormLayout()
        layout.addLayout(self.basic)
        self.advanced_button = QToolButton(self)
        self.advanced_button.setText("▸ Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setAutoRaise(True)
        self.advanced_button.toggled.connect(self._on_advanced_toggled)
        layout.addWidget(self.advanced_button)
        self.advanced_box = QGroupBox(self)
        self.advanced = QFormLayout(self.advanced_box)
        self.advanced_box.setVisible(False)
        layout.addWidget(self.advanced_box)
        layout.addStretch(1)

    def _on_advanced_toggled(self, on: bool) -> None:
        self.advanced_box.setVisible(on)
        self.advanced_button.setText(("▾" if on else "▸") + " Advanced")

    def clear(self) -> None:
        for form in (self.basic, self.advanced):
            while form.rowCount():
                form.removeRow(0)
        self.editors.clear()
        self.auto_checks.clear()
        self._types.clear()

    def set_schema(self, schema: dict[str, Any], values: dict[str, Any] | None = None) -> None:
        self.clear()
        values = values or {}
        n_adv = 0
        for name, raw in schema.get("properties", {}).items():
            prop, nullable = _nullable(schema, _resolve(schema, raw))
            editor, kind = self._editor(prop)
            if nullable and kind == "enum":
                editor.insertItem(0, "automatic", None)
                nullable = False  # the combo's own "automatic" item is None
            editor.setObjectName(f"field_{name}")
            tip = prop.get("description", "")
            if kind in ("integer", "number"):
                lo, hi = editor.minimum(), editor.maximum()
                if abs(lo) < 1e11 or abs(hi) < 1e11:
                    tip += f"\nAllowed: {lo:.6g} to {hi:.6g}" if kind == "number" else f"\nAllowed: {lo} to {hi}"
            editor.setToolTip(tip)
            editor.setAccessibleName(prop.get("title", name))
            self.editors[name] = editor
            self._types[name] = kind
            field: QWidget = editor
            if nullable:
                field = QWidget()
                row = QHBoxLayout(field)
                row.setContentsMargins(0, 0, 0, 0)
                auto = QCheckBox("auto")
                auto.setObjectName(f"auto_{name}")
                auto.setAccessibleName(f"{prop.get('title', name)}: automatic")
                auto.setToolTip("Let the method choose (see the field's tooltip); uncheck to set a value.")
                auto.toggled.connect(lambda on, n=name: self._on_auto(n, on))
                auto.toggled.connect(self.changed)
                row.addWidget(editor, 1)
                row.addWidget(auto)
                self.auto_checks[name] = auto
            value = values.get(name, prop.get("default"))
            self._set(name, value)
            label = QLabel(prop.get("title", name.replace("_", " ").capitalize()) + ":")
            label.setToolTip(tip)
            label.setBuddy(editor)
            advanced = bool(prop.get("advanced"))
            n_adv += advanced
            (self.advanced if advanced else self.basic).addRow(label, field)
        self.advanced_button.setVisible(n_adv > 0)
        if not n_adv:
            self.advanced_box.setVisible(False)

    def _editor(self, prop: dict[str, Any]) -> tuple[QWidget, str]:
        typ = prop.get("type")
        if "enum" in prop:
            box = QComboBox()
            for v in prop["enum"]:
                box.addItem(str(v), v)
            box.currentIndexChanged.connect(self.changed)
            return box, "enum"
        if typ == "boolean":
            check = QCheckBox()
            check.toggled.connect(self.changed)
            return check, "boolean"
        if typ == "integer":
            spin = QSpinBox()
            spin.setRange(*_limits(prop, True))
            spin.valueChanged.connect(self.changed)
            return spin, "integer"
        if typ == "number":
            lo, hi = _limits(prop, False)
            default = prop.get("default")
            small = default is not None and default != 0 and abs(default) < 0.01
            spin = ScientificSpinBox() if small or lo > 0 else QDoubleSpinBox()
            if not isinstance(spin, ScientificSpinBox):
                spin.setDecimals(4)
                span = hi - lo if math.isfinite(hi - lo) and hi - lo < 1e11 else 10.0
                spin.setSingleStep(10 ** math.floor(math.log10(max(span / 100, 1e-4))))
            spin.setRange(lo, hi)
            spin.valueChanged.connect(self.changed)
            return spin, "number"
        if typ == "array":  # lists of texts or numbers: one item a line (items may hold commas)
            text = QPlainTextEdit()
            text.setTabChangesFocus(True)
            text.setFixedHeight(text.fontMetrics().lineSpacing() * 4 + 10)
            text.textChanged.connect(self.changed)
            return text, "array:" + str((prop.get("items") or {}).get("type", "string"))
        edit = QLineEdit()
        edit.textChanged.connect(self.changed)
        return edit, "string"

    def _on_auto(self, name: str, on: bool) -> None:
        editor = self.editors[name]
        editor.setEnabled(not on)
        if isinstance(editor, QSpinBox | QDoubleSpinBox):  # reads "automatic" (shown at the minimum) while auto
            if on:
                editor.setSpecialValueText("automatic")
                editor.setValue(editor.minimum())
            else:
                editor.setSpecialValueText("")
        elif isinstance(editor, QLineEdit | QPlainTextEdit):
            editor.setPlaceholderText("automatic" if on else "")

    def _set(self, name: str, value: Any) -> None:
        editor, kind = self.editors[name], self._types[name]
        auto = self.auto_checks.get(name)
        if auto is not None:
            auto.setChecked(value is None)
            self._on_auto(name, value is None)
        if value is None:
            if kind == "string":
                editor.setText("")
            elif kind.startswith("array"):
                editor.setPlainText("")
            elif kind == "enum" and editor.count() and editor.itemData(0) is None:
                editor.setCurrentIndex(0)  # "automatic"
            return
        if kind == "enum":
            i = editor.findData(value)
            editor.setCurrentIndex(max(i, 0))
        elif kind == "boolean":
            editor.setChecked(bool(value))
        elif kind in ("integer", "number"):
            editor.setValue(value)
        elif kind.startswith("array"):
            editor.setPlainText("\n".join(str(v) for v in value))
        else:
            editor.setText("" if value is None else str(value))

    def set_values(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name in self.editors:
                self._set(name, value)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, editor in self.editors.items():
            kind = self._types[name]
            auto = self.auto_checks.get(name)
            if auto is not None and auto.isChecked():
                out[name] = None
            elif kind == "enum":
                out[name] = editor.currentData()
            elif kind == "boolean":
                out[name] = editor.isChecked()
            elif kind == "integer":
                out[name] = int(editor.value())
            elif kind == "number":
                out[name] = float(editor.value())
            elif kind.startswith("array"):
                out[name] = _parse_lines(editor.toPlainText(), kind.split(":", 1)[1])
            else:
                out[name] = editor.text()
        return out


def _parse_lines(text: str, item_type: str) -> list[Any]:
    """One item a line; blank lines are dropped. Numbers that do not parse stay text, so the method's own
    validation names the bad item instead of the form guessing."""
    items: list[Any] = [line.strip() for line in text.splitlines() if line.strip()]
    if item_type in ("integer", "number"):
        conv = int if item_type == "integer" else float
        out: list[Any] = []
        for item in items:
            try:
                out.append(conv(item))
            except ValueError:
                out.append(item)
        return out
    return items
