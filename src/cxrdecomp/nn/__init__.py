"""Network building blocks and losses shared by more than one method (:mod:`.blocks`, :mod:`.losses`)."""
