"""The interactive map: ``OUT/map.html``, an offline Bokeh page of the embedding on the torus.

Hover a point for its spectrogram (kHz × ms) and metadata, click it to hear the syllable (or
see a cell's top genes / a time bin's place in the session), click an empty place to see what
the model decodes there, box/lasso-select to list items and download them as CSV.
Needs the ``interactive`` extra (Bokeh): ``pip install 'vocalatent[interactive]'``.

>>> from vocalatent.interactive import write_run_map
>>> write_run_map("recordings_vocalatent")          # writes recordings_vocalatent/map.html
"""

from .page import MAX_INLINE_ITEMS, MapPage, MissingExtraError, require_bokeh, write_map
from .run import write_job_map, write_run_map

__all__ = ["MAX_INLINE_ITEMS", "MapPage", "MissingExtraError", "require_bokeh", "write_map",
           "write_job_map", "write_run_map"]
