"""Widgets show on ipywidgets 7 (Colab's) and 8 alike: the view is written out, not asked of ipywidgets 8."""

import pytest


def test_display_widget_writes_the_view_and_a_static_note(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    import IPython.display

    from lmcls_helpers.plots import display_widget

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    slider = widgets.IntSlider(value=3, min=0, max=9)
    display_widget(slider, "(a slider: open the notebook in Jupyter to move it)")
    (bundle, raw), = shown
    assert raw and bundle["text/plain"] == "(a slider: open the notebook in Jupyter to move it)"
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == slider.model_id and view["version_major"] == 2


def test_memory_explorer_shows_sliders_and_the_default_figure(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display

    from lmcls_helpers.models import llama_config
    from lmcls_helpers.plots import memory_explorer
    from lmcls_helpers.profiles import get_profile

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, display_id=None: shown.append(obj))
    memory_explorer(llama_config(get_profile("tiny")), {"T4": 14.75})
    assert "application/vnd.jupyter.widget-view+json" in shown[0]  # the sliders
    assert type(shown[1]).__name__ == "Image"  # the figure at the defaults, for a static page
