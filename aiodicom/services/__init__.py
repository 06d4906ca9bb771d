"""DIMSE services, each a module of coroutines over a :class:`~aiodicom.dispatcher.Dispatcher`."""
