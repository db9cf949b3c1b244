using Portcullis.Appliance.Configuration;
using Xunit;

namespace Portcullis.Appliance.Tests.Configuration;

// Loading INI text the way every configuration test does: one made-up file name, so error
// messages can be compared whole.
internal static class IniText
{
    public const string Source = "/etc/portcullis/test.ini";

    public static GatewayConfig Load(string ini) => ConfigLoader.LoadFromString(ini, Source);

    public static IReadOnlyList<string> Errors(string ini) => Assert.Throws<ConfigException>(() => Load(ini)).Errors;

    public static string SingleError(string ini) => Assert.Single(Errors(ini));
}
