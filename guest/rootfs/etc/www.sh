#!/bin/sh
# (Re)writes the httpd page; it names the current hostname (called at boot and on DHCP leases).
h=$(hostname)
mkdir -p /var/www
cat >/var/www/index.html.new <<EOT
<!DOCTYPE html>
<html><head><title>$h</title></head>
<body><h1>$h</h1><p>virtbus test guest, hostname: $h</p></body></html>
EOT
mv /var/www/index.html.new /var/www/index.html
