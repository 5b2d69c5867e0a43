"""MQTT connection settings and the paho client factory every binwatch MQTT client shares."""
