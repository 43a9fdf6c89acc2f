"""The collector: sends ``PriceEvent``s to the Pub/Sub ``prices`` topic for the streaming pipeline.

Events come from a real price file replayed at a multiple of real time or as fast as possible
(``collector.files``) or from a live quote API (``collector.providers``), and go out through
``collector.publisher.publish_events`` with the attributes ``symbol``, ``event_time`` and
``event_id``, an ordering key per instrument, and a written retry policy whose failures are counted
in a report, never dropped. ``collector.cli`` provides the ``publish`` subcommand; run
``python -m collector.cli publish --help`` (``miraikakaku publish`` in the main CLI).
"""
