using Xunit;
using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// [general] smtp_server_xclient: XCLIENT towards the mail server when offered (auto), or never (no).
public class XClientConfigTests
{
    [Fact]
    public void XClientIsUsedWhenOfferedUnlessTurnedOff()
    {
        Assert.True(Load("").General.SmtpServerXClient);
        Assert.True(Load("[general]\nsmtp_server_xclient = AUTO").General.SmtpServerXClient);
        Assert.False(Load("[general]\nsmtp_server_xclient = no").General.SmtpServerXClient);
    }

    [Fact]
    public void AnotherWordNamesTheKeyAndTheChoices()
    {
        var error = SingleError("[general]\nsmtp_server_xclient = yes please");
        Assert.StartsWith($"{Source}: [general] smtp_server_xclient = \"yes please\": ", error);
        Assert.Contains("auto, no", error);
    }
}
