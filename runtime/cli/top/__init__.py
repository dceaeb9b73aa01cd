"""``agentwatch top``: a live terminal view of one or more ``/metrics`` pages.

Split by concern: ``scrape.py`` reads the pages (aiohttp, a timeout per scrape, the
metrics token) into ``Snapshot``s; ``window.py`` turns two snapshots of a target into
what happened between them (counter resets handled) and sums targets; ``figures.py``
computes the figures of a window (rates, p50/p95 from bucket deltas, error ratios,
tokens, spend, batches); ``monitor.py`` keeps the targets' last snapshots and the
history the sparklines draw. None of these imports rich: ``screen.py`` draws a frame,
``keys.py`` reads the keyboard, ``command.py`` is the command.
"""
