"""The notification service: matches users' alert rules against market events.

Modules: ``events`` (the event wire format), ``sources`` (where events are read from),
``rules`` (rule matching), ``service`` (the ``miraikakaku notify`` loop), ``templates`` (titles
and bodies per locale) and ``channels`` (email and webhook delivery).
"""
