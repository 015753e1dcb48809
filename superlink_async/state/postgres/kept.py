"""Facts read from the database, answered from memory until the database says they may not hold.

Two reads come with nearly every Fleet call: whether the caller's key is bound to the node
it names (every signed call), and whether anything waits for that node (every poll, every
3 s from every idle node). Both facts change only in ways the database announces on the
change channel, whoever changed them, by triggers of the schema (version 3, ``notices``):

- a binding lasts until its node is deleted (``node`` notice: a node deleted, a key
  rewritten, the table truncated);
- "nothing deliverable waits for this node" lasts until an instruction is stored (``ins``
  notice: any insert into ``message_ins``); deliveries and deletions only keep it true, and
  an instruction's TTL only lapses.

So a ``Kept`` holds the facts read since the last such notice, and is trusted only while this
process listens: from the moment its LISTEN is in place until that connection is lost. Each
change of that state, and each notice of its kind, forgets everything it holds (such
notices come about once a round; a forgotten fact costs one read). A read that was under
way when a notice came may have seen the database before the change: ``keep`` refuses what
it found (``generation``). A notice is delivered a fraction of a millisecond after its
commit; until then this process may answer as before the change, as if the call had come
that much earlier.
"""

from __future__ import annotations

from typing import Generic, TypeVar

Fact = TypeVar("Fact")


class Kept(Generic[Fact]):
    """Facts the database confirmed since the last notice of their kind."""

    def __init__(self) -> None:
        self._facts: set[Fact] = set()
        self._trusted = False
        #: Bumped whenever what was read before may no longer hold.
        self._generation = 0

    @property
    def trusted(self) -> bool:
        """Whether this process hears the notices now, so that what it reads may be kept."""
        return self._trusted

    @property
    def generation(self) -> int:
        """Take it before a read; hand it to ``keep`` with what the read found."""
        return self._generation

    def holds(self, fact: Fact) -> bool:
        """True only if the database said so and no notice that it may have changed came since."""
        return self._trusted and fact in self._facts

    def keep(self, fact: Fact, generation: int) -> None:
        """Keep what a read begun at ``generation`` found."""
        if self._trusted and generation == self._generation:
            self._facts.add(fact)

    def forget(self) -> None:
        """A notice came (or this process changed the facts): everything is read again."""
        self._facts.clear()
        self._generation += 1

    def listening(self, heard: bool) -> None:
        """Notices are heard from now on (``heard``), or may be missed from now on."""
        self.forget()
        self._trusted = heard
