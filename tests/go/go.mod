module bastion.local/rendertemplate

go 1.19
