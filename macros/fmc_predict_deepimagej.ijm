// fmc_predict_deepimagej.ijm -- run an fmc-ij bioimage.io model with deepImageJ on one image or a folder.
//
// Needs Fiji with deepImageJ 3.1+ (update site "DeepImageJ"). Arguments (key=value):
//   model=[/path/Fiji.app/models/fmc-ij-demo]   the unpacked bundle folder (rdf.yaml inside), or an installed name
//   input=[/data/image_0_nucleus_angle.tif]      a TIFF, or a folder: every *.tif in it
//   output=[/out/dir]                            predictions, renamed to the input's file name (fmc-ij's layout)
// Install a bundle once with Plugins > DeepImageJ > DeepImageJ Install Model (From ZIP file), or unzip it into
// Fiji.app/models/<name>/. Headless:
//   ImageJ-linux64 --headless --console -macro fmc_predict_deepimagej.ijm "model=[...] input=[...] output=[...]"
// The deepImageJ keys are the snake_case ones of deepImageJ 3.1 (model_path, input_path, output_folder).

arg = getArgument();
model = call("ij.Macro.getValue", arg, "model", "");
input = call("ij.Macro.getValue", arg, "input", "");
output = call("ij.Macro.getValue", arg, "output", "");
if (model == "" || input == "" || output == "") exit("usage: model=[model folder] input=[file or folder] output=[folder]");
if (endsWith(toLowerCase(model), ".zip")) exit("unpack " + model + " first: DeepImageJ Install Model, or unzip it into Fiji.app/models/");
File.makeDirectory(output);
files = newArray(0);
if (File.isDirectory(input)) {
    dir = input;
    if (!endsWith(dir, File.separator)) dir = dir + File.separator;
    list = getFileList(dir);
    for (i = 0; i < list.length; i++)
        if (endsWith(toLowerCase(list[i]), ".tif") || endsWith(toLowerCase(list[i]), ".tiff")) files = Array.concat(files, dir + list[i]);
} else {
    files = newArray(input);
}
if (files.length == 0) exit("no TIFF files in " + input);
setBatchMode(true);
for (i = 0; i < files.length; i++) {
    name = File.getName(files[i]);
    print("[" + (i + 1) + "/" + files.length + "] deepImageJ: " + name);
    showProgress(i, files.length);
    run("DeepImageJ Run", "model_path=[" + model + "] input_path=[" + files[i] + "] output_folder=[" + output + "] display_output=null");
    // deepImageJ writes <short title>_<output tensor>.tif; give it the input's name, as fmc-ij predict does.
    short = substring(name, 0, lastIndexOf(name, "."));
    produced = output + File.separator + short + "_restored.tif";
    if (!File.exists(produced)) exit("deepImageJ wrote no " + produced + "; check the model and the Log window");
    if (File.exists(output + File.separator + name)) ok = File.delete(output + File.separator + name);
    ok = File.rename(produced, output + File.separator + name);
}
showProgress(1);
print("done " + files.length + " image(s) -> " + output);
