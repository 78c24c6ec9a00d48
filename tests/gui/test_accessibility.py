"""Keyboard and screen-reader basics: every input explains itself, focus moves in reading order, shortcuts work."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QSlider,
    QTableWidget,
)

from .conftest import fill_digits, load_demo


def _labelled(window) -> set[int]:
    return {id(label.buddy()) for label in window.findChildren(QLabel) if label.buddy() is not None}


def test_every_input_has_a_tooltip_label_or_accessible_name(qtbot, window):
    fill_digits(qtbot, window)
    buddies = _labelled(window)
    missing = []
    for cls in (QLineEdit, QComboBox, QAbstractSpinBox, QListWidget, QSlider, QTableWidget, QAbstractButton):
        for w in window.findChildren(cls):
            if isinstance(w, QLineEdit) and isinstance(w.parent(), (QComboBox, QAbstractSpinBox)):
                continue  # the editor inside a combo or spin box
            if isinstance(w, QAbstractButton) and (w.text().strip() or w.objectName().startswith("qt_")):
                continue  # labelled, or Qt's own (table corner, menu bar extension)
            if w.toolTip() or w.accessibleName() or id(w) in buddies:
                continue
            missing.append(f"{type(w).__name__} {w.objectName()!r} on {w.window().windowTitle()!r}")
    assert not missing, missing


def test_focus_moves_in_reading_order_on_the_model_page(qtbot, window):
    page = window.pages[0]
    chain, w = [], page.demo_list
    for _ in range(6):
        chain.append(w)
        w = w.nextInFocusChain()
        while not (w.focusPolicy() & w.focusPolicy().TabFocus) or not w.isEnabled():
            w = w.nextInFocusChain()
    assert chain[:5] == [page.demo_list, page.open_folder_button, page.open_file_button, page.device_combo,
                         page.dtype_combo]


def test_next_and_back_by_keyboard(qtbot, window):
    load_demo(qtbot, window, "digits")
    window.show()
    window.next_button.animateClick()
    qtbot.waitUntil(lambda: window.stack.currentIndex() == 1, timeout=2000)
    assert window.next_button.shortcut().toString() == "Alt+Right"
    assert window.back_button.shortcut().toString() == "Alt+Left"
    assert window.pages[4].start_button.shortcut().toString() == "Ctrl+R"
