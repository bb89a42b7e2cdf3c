"""Missing packages give the install command, not a traceback."""
import sys

from skyclear.plugin import dependencies


def test_all_present_here():
    assert dependencies.missing() == []
    assert dependencies.problem_message() is None


def test_missing_package_message_names_it_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert dependencies.missing() == ["onnxruntime"]
    message = dependencies.problem_message()
    assert "onnxruntime" in message and "pip install" in message and "numpy<2" in message


def test_runtime_reports_why_gpu_is_unavailable():
    from skyclear.plugin.core.runtime import gpu_status

    available, reason = gpu_status()
    assert isinstance(available, bool) and reason
    if not available:
        assert "onnxruntime" in reason or "driver" in reason
