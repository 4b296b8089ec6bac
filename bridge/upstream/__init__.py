"""The calls the bridge makes: the Sentifyd client (``sentifyd``) over bounded outbound HTTP
(``outbound``)."""
