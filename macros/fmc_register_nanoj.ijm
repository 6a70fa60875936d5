// fmc_register_nanoj.ijm -- register an LR image onto an HR reference with NanoJ-Core's "Register Channels".
//
// Needs Fiji with the NanoJ-Core update site. Arguments (key=value, brackets around values with spaces):
//   reference=[/data/hr.tif] moving=[/data/lr.tif] out=[/out/dir]
//   options=[reference=1 number=2 max=0 blocks=5 min=0.5 gaussian=0 apply]   (optional: these are the defaults)
// Writes out/registered.tif (the moving image aligned onto the reference) and out/translation_mask.tif
// (NanoJ's mask, 2w x h: x shifts | y shifts). Headless:
//   ImageJ-linux64 --headless --console -macro fmc_register_nanoj.ijm "reference=[...] moving=[...] out=[...]"
// No "#@" parameters: plain ImageJ 1 cannot parse them.

arg = getArgument();
ref = call("ij.Macro.getValue", arg, "reference", "");
mov = call("ij.Macro.getValue", arg, "moving", "");
out = call("ij.Macro.getValue", arg, "out", "");
opts = call("ij.Macro.getValue", arg, "options", "reference=1 number=2 max=0 blocks=5 min=0.5 gaussian=0 apply");
if (ref == "" || mov == "" || out == "") exit("usage: reference=[hr.tif] moving=[lr.tif] out=[folder] (options=[...])");
File.makeDirectory(out);
setBatchMode(true);
open(ref); r = getTitle();
open(mov); m = getTitle();
// NanoJ expects the channels interleaved in one stack: slice 1 = reference, slice 2 = moving.
run("Concatenate...", "  title=pair image1=[" + r + "] image2=[" + m + "]");
print("NanoJ Register Channels: " + opts);
run("Register Channels - Estimate", opts);
names = getList("image.titles");
for (k = 0; k < names.length; k++) {
    selectImage(names[k]);
    t = getTitle();
    if (endsWith(t, "TranslationMask")) saveAs("Tiff", out + File.separator + "translation_mask.tif");
    if (endsWith(t, "Registered")) {
        setSlice(2);
        run("Duplicate...", "title=moved");
        saveAs("Tiff", out + File.separator + "registered.tif");
    }
}
print("done " + out);
