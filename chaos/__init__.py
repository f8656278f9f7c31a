"""The chaos suite: the real pipeline under worker kills, Redis crashes and freezes, and Plaud faults."""
