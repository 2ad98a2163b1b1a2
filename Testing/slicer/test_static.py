"""Static checks of the Slicer module, without Slicer: the code, the .ui file and CMake agree, the module
uses only public ``deepliver`` names that exist, and only Slicer/CTK/VTK names that Slicer declares.

Slicer is not installed here, so these read the files (``ast``, ``xml.etree``); the behaviour inside
Slicer is covered by the module's own self-test (``SlicerDeepLiverTest``).
"""

import ast
import importlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SlicerDeepLiver"
MODULE_FILE = MODULE_DIR / "SlicerDeepLiver.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SlicerDeepLiver.ui"
SHARED = REPO.parent / "shared"
PY_FILES = sorted(MODULE_DIR.rglob("*.py"))


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _ui():
    return ET.parse(UI_FILE).getroot()


def _ui_widgets():
    """{objectName: class} of every widget in the .ui file."""
    return {w.get("name"): w.get("class") for w in _ui().iter("widget")}


def _class_def(tree, name):
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name]
    assert found, f"class {name} not found in {MODULE_FILE.name}"
    return found[0]


def test_every_module_file_compiles():
    for path in PY_FILES:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_ui_widgets_all_have_unique_object_names():
    names = [w.get("name") for w in _ui().iter("widget")]
    assert all(names), "a <widget> in the .ui file has no name (objectName)"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"widget names used twice in {UI_FILE.name}: {duplicates}"
    assert _ui().find("widget").get("name") == "SlicerDeepLiver"


def test_code_uses_only_widgets_the_ui_defines():
    widgets = _ui_widgets()
    used = {}
    for path in PY_FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == "self":
                used.setdefault(node.attr, f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ui":
                used.setdefault(node.attr, f"{path.name}:{node.lineno}")
    missing = {name: where for name, where in used.items() if name not in widgets}
    assert not missing, f"code uses ui widgets that {UI_FILE.name} lacks: {missing}"
    assert len(used) >= 10, f"only {len(used)} ui names found: the scan is broken"


INTERACTIVE = {"QPushButton", "QComboBox", "QTableWidget", "QProgressBar", "QLineEdit", "QCheckBox",
               "ctkPathLineEdit", "qMRMLNodeComboBox", "qMRMLSegmentEditorWidget"}


def test_every_interactive_widget_is_wired_to_the_code_or_the_parameter_node():
    """A button, list or field in the .ui that no code reads and no parameter binds is dead UI."""
    used = set()
    for path in PY_FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and ((isinstance(node.value, ast.Attribute) and node.value.attr == "ui")
                                                    or (isinstance(node.value, ast.Name) and node.value.id == "ui")):
                used.add(node.attr)
    bound = {w.get("name") for w in _ui().iter("widget")
             if any(p.get("name") == "SlicerParameterName" for p in w.findall("property"))}
    interactive = {name for name, cls in _ui_widgets().items() if cls in INTERACTIVE}
    assert {"segmentButton", "cancelButton", "segmentProgressBar", "deviceComboBox", "bundlesTable",
            "modelsFolderPathLineEdit"} <= interactive, "the AI segmentation section is missing from the .ui"
    orphans = sorted(interactive - used - bound)
    assert not orphans, f"widgets in {UI_FILE.name} that nothing uses: {orphans}"


def test_ui_custom_widgets_are_declared_and_used():
    root = _ui()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom_used = {c for c in used if not c.startswith("Q")}
    assert custom_used == declared, (f"<customwidgets> must declare exactly the non-Qt classes used: "
                                     f"undeclared {sorted(custom_used - declared)}, unused {sorted(declared - custom_used)}")
    for c in root.iter("customwidget"):
        assert c.findtext("header") == f"{c.findtext('class')}.h"
        assert c.findtext("extends"), f"customwidget {c.findtext('class')} has no <extends>"


def _parameter_fields():
    cls = _class_def(_tree(MODULE_FILE), "SlicerDeepLiverParameterNode")
    decorators = [d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in cls.decorator_list]
    assert "parameterNodeWrapper" in decorators
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


# What slicer.parameterNodeWrapper's GUI connectors accept: widget class -> parameter types.
CONNECTABLE = {"ctkPathLineEdit": {"pathlib.Path"}, "ctkDirectoryButton": {"pathlib.Path"},
               "QLineEdit": {"str"}, "QLabel": {"str"}, "QCheckBox": {"bool"}, "QPushButton": {"bool"},
               "qMRMLNodeComboBox": {"vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"}}


def test_ui_parameter_bindings_match_the_parameter_node():
    fields = _parameter_fields()
    bound = {}
    for w in _ui().iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[p.findtext("string")] = w
    assert bound, "no widget is bound to the parameter node (SlicerParameterName)"
    for name, w in bound.items():
        assert name in fields, f"widget {w.get('name')} is bound to {name!r}, not a parameter ({sorted(fields)})"
        assert fields[name] in CONNECTABLE.get(w.get("class"), set()), \
            f"{w.get('class')} {w.get('name')} cannot show a parameter of type {fields[name]}"
        if w.get("class") == "QPushButton":
            checkable = {p.get("name"): p.findtext("bool") for p in w.findall("property")}.get("checkable")
            assert checkable == "true", f"button {w.get('name')} bound to a bool must be checkable"


def _cmake_list(text, variable):
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return {item.replace("${MODULE_NAME}", "SlicerDeepLiver") for item in match.group(1).split()}


def test_cmake_lists_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in PY_FILES}
    assert scripts == on_disk, f"CMake scripts differ from the .py files: missing {sorted(on_disk - scripts)}, " \
                               f"not on disk {sorted(scripts - on_disk)}"
    files = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert resources == files, f"CMake resources differ from Resources/: missing {sorted(files - resources)}, " \
                               f"not on disk {sorted(resources - files)}"


def test_top_cmake_has_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), f"EXTENSION_{key} missing or empty"
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(SlicerDeepLiver)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text, f"{line} missing from CMakeLists.txt"
    assert (REPO / "Resources" / "Icons" / "SlicerDeepLiver.png").is_file()


def _deepliver_imports():
    """(file:line, module, name or None) for every import of deepliver in the module's files."""
    found = []
    for path in PY_FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "deepliver":
                found += [(f"{path.name}:{node.lineno}", node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(f"{path.name}:{node.lineno}", a.name, None) for a in node.names
                          if a.name.split(".")[0] == "deepliver"]
    return found


def test_deepliver_imports_are_public_and_exist():
    imports = _deepliver_imports()
    assert len(imports) >= 8, f"only {len(imports)} deepliver imports found: the scan is broken"
    for where, module, name in imports:
        parts = module.split(".") + ([name] if name else [])
        assert not any(p.startswith("_") for p in parts), f"{where}: private deepliver name {'.'.join(parts)}"
        mod = importlib.import_module(module)
        if name and not hasattr(mod, name):
            importlib.import_module(f"{module}.{name}")  # a submodule; raises if it does not exist either


def test_deepliver_is_never_imported_at_module_level():
    """Slicer must list the module even when deepliver is not installed yet."""
    for path in PY_FILES:
        for node in _tree(path).body:
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.split(".")[0] == "deepliver" for n in names), \
                f"{path.name}:{node.lineno}: deepliver imported at module level"


def _defined(path):
    targets = [t for n in _tree(path).body if isinstance(n, (ast.Assign, ast.AnnAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
    names = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
    return {n.name for n in _tree(path).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | \
           {t.id for t in names if isinstance(t, ast.Name)}


def test_helper_imports_and_logic_calls_resolve():
    for path in PY_FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("SlicerDeepLiverLib"):
                target = MODULE_DIR / (node.module.replace(".", "/") + ".py")
                if node.module == "SlicerDeepLiverLib":
                    missing = [a.name for a in node.names if not (MODULE_DIR / "SlicerDeepLiverLib" / f"{a.name}.py").is_file()]
                else:
                    missing = [a.name for a in node.names if a.name not in _defined(target)]
                assert not missing, f"{path.name}:{node.lineno}: {node.module} has no {missing}"
    tree = _tree(MODULE_FILE)
    logic = {n.name for n in _class_def(tree, "SlicerDeepLiverLogic").body if isinstance(n, ast.FunctionDef)}
    scene = _defined(MODULE_DIR / "SlicerDeepLiverLib" / "scene.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "logic":
            assert node.attr in logic, f"line {node.lineno}: the logic has no method {node.attr}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "scene":
            assert node.attr in scene, f"line {node.lineno}: SlicerDeepLiverLib.scene has no {node.attr}"


def test_module_has_the_four_slicer_classes_and_a_live_self_test():
    tree = _tree(MODULE_FILE)
    bases = {"SlicerDeepLiver": "ScriptedLoadableModule", "SlicerDeepLiverWidget": "ScriptedLoadableModuleWidget",
             "SlicerDeepLiverLogic": "ScriptedLoadableModuleLogic", "SlicerDeepLiverTest": "ScriptedLoadableModuleTest"}
    for name, base in bases.items():
        assert base in [ast.unparse(b) for b in _class_def(tree, name).bases], f"{name} must derive from {base}"
    test = _class_def(tree, "SlicerDeepLiverTest")
    methods = {n.name: n for n in test.body if isinstance(n, ast.FunctionDef)}
    called = {n.func.attr for n in ast.walk(methods["runTest"]) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Attribute)}
    tests = {m for m in methods if m.startswith("test_")}
    assert tests and tests <= called, f"runTest must run every test method: {sorted(tests - called)} not run"
    source = ast.unparse(test)
    assert "skip" not in source.lower(), "the self-test must not be skipped or disabled"
    assert "saveCase" in source and "prepareVolume" in source, "the self-test must save and reload a case"
    assert len(MODULE_FILE.read_text().splitlines()) <= 470, "SlicerDeepLiver.py grew too long: move helpers out"


def test_user_strings_in_the_module_are_translatable():
    """Messages shown to the user go through _() (slicer.i18n.tr)."""
    tree = _tree(MODULE_FILE)
    shown = ("tryWithErrorDisplay", "confirmOkCancelDisplay", "errorDisplay", "infoDisplay")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in shown:
            arg = node.args[0] if node.args else None
            assert arg is not None and "_(" in ast.unparse(arg), f"line {node.lineno}: untranslated message"
        if isinstance(node, ast.Assign) and any(ast.unparse(t).endswith(".text") for t in node.targets):
            assert not isinstance(node.value, ast.Constant) or not node.value.value, \
                f"line {node.lineno}: literal text assigned without _()"


def test_slicer_api_names_exist():
    checker = SHARED / "slicer-api" / "check_slicer_api.py"
    if not checker.is_file():
        pytest.skip(f"Slicer API name lists not found at {checker.parent} (they live beside the repository)")
    run = subprocess.run([sys.executable, str(checker), str(MODULE_DIR)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"unknown Slicer/CTK/VTK names:\n{run.stdout}{run.stderr}"
    assert "0 unknown" in run.stdout
