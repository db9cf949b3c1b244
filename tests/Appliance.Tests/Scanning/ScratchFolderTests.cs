using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Scanning;
using Xunit;

namespace Portcullis.Appliance.Tests.Scanning;

// An empty [scan] scratch_folder is scan/ in the unit's RuntimeDirectory (a tmpfs) under systemd,
// temp_folder elsewhere; a folder named in the file always wins.
public sealed class ScratchFolderTests
{
    [Fact]
    public void Empty_scratch_folder_is_the_runtime_directory_under_systemd_and_temp_folder_elsewhere()
    {
        var config = ConfigLoader.LoadFromString("[general]\ntemp_folder = /var/tmp/gw", "(test)");

        Assert.Equal("/run/portcullis/scan", ScanSettings.ScratchFolder(config, "/run/portcullis:/run/portcullis/scan"));
        Assert.Equal("/run/portcullis/scan", ScanSettings.ScratchFolder(config, "/run/portcullis"));
        Assert.Equal("/var/tmp/gw", ScanSettings.ScratchFolder(config, null));
        Assert.Equal("/var/tmp/gw", ScanSettings.ScratchFolder(config, ""));
    }

    [Fact]
    public void A_scratch_folder_in_the_file_wins()
    {
        var config = ConfigLoader.LoadFromString("[general]\ntemp_folder = /var/tmp/gw\n[scan]\nscratch_folder = /srv/scratch", "(test)");

        Assert.Equal("/srv/scratch", ScanSettings.ScratchFolder(config, "/run/portcullis:/run/portcullis/scan"));
    }
}
