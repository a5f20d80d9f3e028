"""The dock widget's parts: a controller (layers, model, device, the worker) and one panel per action.

Panels (:mod:`.prompting`, :mod:`.stack`, :mod:`.finetune`) import the controller and helpers,
never each other; this package imports none of them, so each can be loaded alone.
"""
