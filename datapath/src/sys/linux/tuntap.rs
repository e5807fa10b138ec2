//! Linux TUN and TAP devices.
