"""PAN-OS: the XML API (``xmlapi``), Panorama (``panorama``: devices, device groups, template
stacks, commits), licences (``licensing``: the sw_fw_license plugin or the licensing API), the
bootstrap (``bootstrap``: init-cfg.txt) and in-memory fakes (``fakes``)."""
