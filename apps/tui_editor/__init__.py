"""The AetherFlow terminal collaborative editor (``aetherflow edit``).

:class:`EditorApp` is the Textual app; :class:`EditorModel` binds a replica to it
(rows over code points, the local selection anchored with sticky indices, local
undo); :class:`LineIndex` maps (row, column) to code points the way Textual splits lines.
"""

from tui_editor._app import EditorApp
from tui_editor._lines import LineIndex
from tui_editor._model import EditorModel, ReadOnlyDocument

__all__ = ["EditorApp", "EditorModel", "LineIndex", "ReadOnlyDocument"]
